"""The Streamlit page's helpers: each module holds one job so app.py only arranges widgets.

- ``ui.errors``: exceptions -> one sentence for ``st.error`` (tracebacks go to stderr).
- ``ui.chat``: the per-session conversation (a saved one), the process-wide generation lock, sources as Markdown.
- ``ui.chat_page``: the Chat page: messages from the saved path, streaming, regenerate/swipes, edit, delete.
- ``ui.history``: the sidebar's reader name, past conversations (resume, rename, delete), her memories.
- ``ui.media``: speech per sentence and talking-head clips for an answer.
- ``ui.knowledge``: inspect uploads, rebuild a store, create a character, store status.
- ``ui.resources``: heavy objects created once per process (chat model, talking heads).
"""
