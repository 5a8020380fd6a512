"""Who may change things: the Settings and Knowledge pages are read-only when the page is served
beyond this machine without a password (ui/resources.editing_allowed says why)."""
from __future__ import annotations

import streamlit as st

from ui.resources import editing_allowed


def may_edit() -> bool:
    """True if this session may change settings or books; otherwise says why (and asks for the password)."""
    allowed, why = editing_allowed(st.session_state.get("password", ""))
    if allowed:
        return True
    st.info(why)
    if "password" in why.lower() and "without a password" not in why:
        st.text_input("Password", type="password", key="password")
    return False
