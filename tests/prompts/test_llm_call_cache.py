"""A model call's step says how many prompt tokens the backend read from its prefix cache."""
from langchain_core.messages import AIMessage, HumanMessage

from prompts.llm_call import call_model

from .scripted import ScriptedChatModel


class CachingModel(ScriptedChatModel):
    """Replies as scripted, with `cache_read` in the usage as the engine and OpenAI's servers report it."""

    cached: int | None = None

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        result = super()._generate(messages, stop, run_manager, **kwargs)
        if self.cached is not None:
            result.generations[0].message.usage_metadata["input_token_details"] = {"cache_read": self.cached}
        return result


def test_cached_prompt_tokens_go_to_the_step_meta():
    step = call_model(CachingModel(cached=48).enqueue("7"), [HumanMessage("3 + 4?")], "answer")
    assert step.meta["cached_prompt_tokens"] == 48 and step.output == "7"


def test_a_backend_that_does_not_say_leaves_it_out():
    step = call_model(CachingModel().enqueue("7"), [HumanMessage("3 + 4?"), AIMessage("")], "answer")
    assert "cached_prompt_tokens" not in step.meta
