"""How many tokens a chat's prompt is, with the model's own template and tokenizer (Anthropic's count_tokens).

The prompt is built as a generation would build it: the model's Go template rendered with the chat, its tools and
its thinking setting, or, with no Go template, the engine's own (Jinja) template applied; then the engine tokenizes
it with the special tokens a prompt gets. The whole conversation is counted, even when a generation would drop its
oldest turns to fit ``num_ctx``.
"""

from __future__ import annotations

from corral.inference import prompting
from corral.inference.request import InferenceRequest
from corral.inference.runner.client import RunnerClient
from corral.templates import prompt as prompts


async def prompt_tokens(client: RunnerClient, req: InferenceRequest, settings: prompting.Settings) -> int:
    if settings.template is None and req.messages is not None and not req.raw:
        text = await prompting.native_prompt(client, req, settings.think)
    else:
        template = settings.template or prompting.template_override(prompts.DEFAULT_TEMPLATE)
        text = prompts.render_chat(template, prompting.with_model_messages(req), tools=req.tools,
                                   think=prompting.think_flag(settings.think),
                                   think_level=prompting.think_level(settings.think))
    return len(await client.tokenize(text, add_special=True))
