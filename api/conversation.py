"""From an OpenAI request to one of her conversations: which character and mode, what history, what question.

Model ids are ``<character>`` (her default mode, reader) and ``<character>:<mode>`` for every mode
(``daiyu``, ``daiyu:roleplay``, ``elizabeth:reader``...). Only ids of characters that exist are
accepted, so a model name is never used as a path.

The client's messages become the conversation (:func:`conversation_for`): the last user message is the
question; earlier user/assistant pairs become her earlier turns, each turn's prompt being the user's text
as sent (the passages those turns were given are not re-sent); system and developer messages become
extra instructions appended to her card.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from api.errors import APIError
from api.schemas import ChatCompletionRequest, ChatMessage
from characters import Card, list_characters
from knowledge_base.store import KnowledgeStore
from prompting import MODES, Budget, Mode, count_tokens, system_prompt
from ragchat import Turn

DEFAULT_MODE = "reader"


@dataclass(frozen=True)
class ModelId:
    card: Card
    mode: str

    @property
    def id(self) -> str:
        return self.card.id if self.mode == DEFAULT_MODE else f"{self.card.id}:{self.mode}"


def all_models() -> list[ModelId]:
    """One model per character and mode, the default mode first."""
    modes = [DEFAULT_MODE, *[m for m in MODES.names() if m != DEFAULT_MODE]]
    return [ModelId(card, mode) for card in list_characters() for mode in modes]


def resolve_model(name: str) -> ModelId:
    """The character and mode a model id names, or a 404 listing what exists."""
    cid, _, mode = (name or "").partition(":")
    mode = mode or DEFAULT_MODE
    cards = {c.id: c for c in list_characters()}
    if cid not in cards or mode not in MODES.names():
        known = ", ".join(m.id for m in all_models()[:8])
        raise APIError(404, f"The model '{name}' does not exist; GET /v1/models lists them (e.g. {known}).",
                       param="model", code="model_not_found")
    return ModelId(cards[cid], mode)


def require_store(model: ModelId) -> None:
    if not KnowledgeStore.exists(model.card.id):
        raise APIError(404, f"{model.card.name} has no knowledge store yet; build it on the server with "
                            f"`python gen_chroma.py build {model.card.id} PATH/TO/BOOK.txt`.",
                       param="model", code="model_not_ready")


# ---------------------------------------------------------------------- the conversation
@dataclass
class Conversation:
    """What one request asks: the question, her earlier turns, and the client's own instructions."""

    question: str
    history: list[Turn] = field(default_factory=list)
    instructions: str = ""

    def card_for(self, card: Card) -> Card:
        """Her card with the client's instructions after her speaking style (cut first when over budget)."""
        if not self.instructions:
            return card
        style = "\n\n".join(p for p in (card.speaking_style.strip(), self.instructions) if p)
        return replace(card, speaking_style=style)


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return (message.content or "").strip()
    texts = []
    for part in message.content:
        if part.type != "text":
            raise APIError(400, f"messages[{index}] holds a '{part.type}' part; only text is understood here.",
                           param=f"messages[{index}].content", code="unsupported_content")
        texts.append(part.text or "")
    return "\n".join(texts).strip()


def conversation_for(request: ChatCompletionRequest, max_messages: int) -> Conversation:
    """The client's messages as her conversation.

    The seam for saved conversations: when they land, ``request.user`` will select a saved conversation
    and its turns will replace the ones read from the messages here (only the question is then needed).
    """
    messages = request.messages
    if not messages:
        raise APIError(400, "'messages' is empty; send at least one user message.", param="messages",
                       code="empty_messages")
    if len(messages) > max_messages:
        raise APIError(400, f"'messages' holds {len(messages)} messages, more than the {max_messages} this server "
                            "takes; send only the recent ones.", param="messages", code="too_many_messages")
    instructions: list[str] = []
    turns: list[Turn] = []
    asked: list[str] = []  # user text not yet answered
    answered: list[str] = []  # assistant text of the turn being read
    last = -1
    for i, m in enumerate(messages):
        if m.role in ("tool", "function"):
            raise APIError(400, "Tool messages are not supported: her answers never call tools.",
                           param=f"messages[{i}].role", code="unsupported_role")
        text = _text(m, i)
        if m.role in ("system", "developer"):
            if text:
                instructions.append(text)
            continue
        if m.role == "user":
            if answered:  # a new exchange begins: the previous one becomes a turn
                turns.append(_turn(asked, answered))
                asked, answered = [], []
            if text:
                asked.append(text)
        elif text:
            answered.append(text)
        last = i
    if last < 0 or messages[last].role != "user":
        raise APIError(400, "The last message must be the user's question (a user message after the last "
                            "assistant one).", param="messages", code="no_question")
    if not asked:
        raise APIError(400, "The last user message is empty; send a question.", param=f"messages[{last}].content",
                       code="empty_question")
    return Conversation("\n".join(asked), turns, "\n\n".join(instructions))


def _turn(asked: list[str], answered: list[str]) -> Turn:
    # An assistant message with no user message before it (a greeting) is a turn with an empty prompt.
    question = "\n".join(asked)
    return Turn(question=question, prompt=question, answer="\n\n".join(answered))


# ---------------------------------------------------------------------- the length check
def prompt_bound(card: Card, mode: Mode, conversation: Conversation, budget: Budget) -> int:
    """The most tokens this turn's prompt can take (the history and passages are trimmed to their budgets)."""
    history = sum(count_tokens(t.prompt) + count_tokens(t.answer) for t in conversation.history)
    question = count_tokens(conversation.question) * (2 if mode.ask_first else 1)
    return (count_tokens(system_prompt(card, mode, budget)) + min(history, budget.history)
            + budget.passages + budget.examples + question + 64)  # 64: labels, reminder, chat template


def check_context(card: Card, mode: Mode, conversation: Conversation, max_tokens: int, context: int,
                  budget: Budget | None = None) -> None:
    """Refuse (400) a request whose prompt and answer could not fit the model's context."""
    need = prompt_bound(card, mode, conversation, budget or Budget()) + max_tokens
    if need > context:
        raise APIError(400, f"This request may need {need} tokens (prompt and max_tokens={max_tokens}) but the "
                            f"model reads {context}; shorten the last message or lower max_tokens.",
                       param="messages", code="context_length_exceeded")
