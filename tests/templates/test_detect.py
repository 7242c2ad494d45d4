"""Chat template detection (corral/templates/detect.py) and the builtin Go templates it chooses from.

Every builtin is checked by rendering: real models' Jinja chat templates (below, copied from the models'
``tokenizer_config.json``) and the builtin must produce the same prompt, byte for byte. Tiny GGUFs written with the
``gguf`` package carry those templates through the real create pipeline, and the bundled SmolLM2 GGUF is
recognised as chatml with its default system prompt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np
import pytest
from conftest import SMOL_FILE, bundled_file

from corral.authoring import CreateSpec, Creator
from corral.store import manifest as mf
from corral.store.store import Store
from corral.templates.detect import NAMES, builtin, detect, go_capabilities, render_jinja
from corral.templates.gotemplate import parse
from corral.templates.prompt import render_chat


class Family(NamedTuple):
    builtin: str  # the builtin it must be recognised as ("" for none)
    system: str  # the default system prompt the Jinja template inserts
    bos: str | None
    eos: str | None
    add_bos: bool  # tokenizer.ggml.add_bos_token: the engine adds BOS itself
    jinja: str


MATCHING: dict[str, Family] = {
    'smollm2': Family(  # HuggingFaceTB/SmolLM2-135M-Instruct (the bundled GGUF)
        'chatml', 'You are a helpful AI assistant named SmolLM, trained by Hugging Face', None, '<|im_end|>', False,
        (
            '{% for message in messages %}{% if loop.first and messag'
            "es[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
            'You are a helpful AI assistant named SmolLM, trained by '
            'Hugging Face<|im_end|>\n'
            "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
            "' + message['content'] + '<|im_end|>' + '\n"
            "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_st"
            'art|>assistant\n'
            "' }}{% endif %}"
        ),
    ),
    'openhermes': Family(  # teknium/OpenHermes-2.5-Mistral-7B
        'chatml', '', '<s>', '<|im_end|>', True,
        (
            "{% for message in messages %}{{'<|im_start|>' + message["
            "'role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n"
            "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_st"
            "art|>assistant\\n' }}{% endif %}"
        ),
    ),
    'qwen2': Family(  # Qwen/Qwen2-7B-Instruct
        'chatml', 'You are a helpful assistant.', '<|endoftext|>', '<|im_end|>', True,
        (
            '{% for message in messages %}{% if loop.first and messag'
            "es[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
            'You are a helpful assistant.<|im_end|>\n'
            "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
            "' + message['content'] + '<|im_end|>' + '\n"
            "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_st"
            'art|>assistant\n'
            "' }}{% endif %}"
        ),
    ),
    'llama3': Family(  # meta-llama/Meta-Llama-3-8B-Instruct
        'llama3', '', '<|begin_of_text|>', '<|eot_id|>', True,
        (
            '{% set loop_messages = messages %}{% for message in loop'
            "_messages %}{% set content = '<|start_header_id|>' + mes"
            "sage['role'] + '<|end_header_id|>\n"
            '\n'
            "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop"
            '.index0 == 0 %}{% set content = bos_token + content %}{%'
            ' endif %}{{ content }}{% endfor %}{% if add_generation_p'
            "rompt %}{{ '<|start_header_id|>assistant<|end_header_id|"
            '>\n'
            '\n'
            "' }}{% endif %}"
        ),
    ),
    'gemma': Family(  # google/gemma-7b-it
        'gemma', '', '<bos>', '<eos>', True,
        (
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{"
            "{ raise_exception('System role not supported') }}{% endi"
            "f %}{% for message in messages %}{% if (message['role'] "
            "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exceptio"
            "n('Conversation roles must alternate user/assistant/user"
            "/assistant/...') }}{% endif %}{% if (message['role'] == "
            "'assistant') %}{% set role = 'model' %}{% else %}{% set "
            "role = message['role'] %}{% endif %}{{ '<start_of_turn>'"
            " + role + '\n"
            "' + message['content'] | trim + '<end_of_turn>\n"
            "' }}{% endfor %}{% if add_generation_prompt %}{{'<start_"
            'of_turn>model\n'
            "'}}{% endif %}"
        ),
    ),
    'mistral': Family(  # mistralai/Mistral-7B-Instruct-v0.1
        'mistral', '', '<s>', '</s>', True,
        (
            '{{ bos_token }}{% for message in messages %}{% if (messa'
            "ge['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ rai"
            "se_exception('Conversation roles must alternate user/ass"
            "istant/user/assistant/...') }}{% endif %}{% if message['"
            "role'] == 'user' %}{{ '[INST] ' + message['content'] + '"
            " [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
            "message['content'] + eos_token}}{% else %}{{ raise_excep"
            "tion('Only user and assistant roles are supported!') }}{"
            '% endif %}{% endfor %}'
        ),
    ),
    'phi3': Family(  # microsoft/Phi-3-small-8k-instruct
        'phi3', '', '<|endoftext|>', '<|endoftext|>', True,
        (
            "{{ bos_token }}{% for message in messages %}{{'<|' + mes"
            "sage['role'] + '|>' + '\n"
            "' + message['content'] + '<|end|>\n"
            "' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assi"
            'stant|>\n'
            "' }}{% else %}{{ eos_token }}{% endif %}"
        ),
    ),
    'phi3mini': Family(  # microsoft/Phi-3-mini-4k-instruct (first release: no system role)
        'phi3', '', '<s>', '<|endoftext|>', True,
        (
            '{{ bos_token }}{% for message in messages %}{% if (messa'
            "ge['role'] == 'user') %}{{'<|user|>' + '\n"
            "' + message['content'] + '<|end|>' + '\n"
            "' + '<|assistant|>' + '\n"
            "'}}{% elif (message['role'] == 'assistant') %}{{message["
            "'content'] + '<|end|>' + '\n"
            "'}}{% endif %}{% endfor %}"
        ),
    ),
    'zephyr': Family(  # HuggingFaceH4/zephyr-7b-beta
        'zephyr', '', '<s>', '</s>', True,
        (
            '{% for message in messages %}\n'
            "{% if message['role'] == 'user' %}\n"
            "{{ '<|user|>\n"
            "' + message['content'] + eos_token }}\n"
            "{% elif message['role'] == 'system' %}\n"
            "{{ '<|system|>\n"
            "' + message['content'] + eos_token }}\n"
            "{% elif message['role'] == 'assistant' %}\n"
            "{{ '<|assistant|>\n"
            "'  + message['content'] + eos_token }}\n"
            '{% endif %}\n'
            '{% if loop.last and add_generation_prompt %}\n'
            "{{ '<|assistant|>' }}\n"
            '{% endif %}\n'
            '{% endfor %}'
        ),
    ),
    'qwen25': Family(  # Qwen/Qwen2.5-7B-Instruct
        'qwen', 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.', None, '<|im_end|>', True,
        (
            '{%- if tools %}\n'
            "    {{- '<|im_start|>system\\n' }}\n"
            "    {%- if messages[0]['role'] == 'system' %}\n"
            "        {{- messages[0]['content'] }}\n"
            '    {%- else %}\n'
            "        {{- 'You are Qwen, created by Alibaba Cloud. You"
            " are a helpful assistant.' }}\n"
            '    {%- endif %}\n'
            '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functio'
            'ns to assist with the user query.\\n\\nYou are provided wi'
            'th function signatures within <tools></tools> XML tags:\\'
            'n<tools>" }}\n'
            '    {%- for tool in tools %}\n'
            '        {{- "\\n" }}\n'
            '        {{- tool | tojson }}\n'
            '    {%- endfor %}\n'
            '    {{- "\\n</tools>\\n\\nFor each function call, return a '
            'json object with function name and arguments within <too'
            'l_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <'
            'function-name>, \\"arguments\\": <args-json-object>}\\n</to'
            'ol_call><|im_end|>\\n" }}\n'
            '{%- else %}\n'
            "    {%- if messages[0]['role'] == 'system' %}\n"
            "        {{- '<|im_start|>system\\n' + messages[0]['conten"
            "t'] + '<|im_end|>\\n' }}\n"
            '    {%- else %}\n'
            "        {{- '<|im_start|>system\\nYou are Qwen, created b"
            'y Alibaba Cloud. You are a helpful assistant.<|im_end|>\\'
            "n' }}\n"
            '    {%- endif %}\n'
            '{%- endif %}\n'
            '{%- for message in messages %}\n'
            '    {%- if (message.role == "user") or (message.role == '
            '"system" and not loop.first) or (message.role == "assist'
            'ant" and not message.tool_calls) %}\n'
            "        {{- '<|im_start|>' + message.role + '\\n' + messa"
            "ge.content + '<|im_end|>' + '\\n' }}\n"
            '    {%- elif message.role == "assistant" %}\n'
            "        {{- '<|im_start|>' + message.role }}\n"
            '        {%- if message.content %}\n'
            "            {{- '\\n' + message.content }}\n"
            '        {%- endif %}\n'
            '        {%- for tool_call in message.tool_calls %}\n'
            '            {%- if tool_call.function is defined %}\n'
            '                {%- set tool_call = tool_call.function %'
            '}\n'
            '            {%- endif %}\n'
            '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
            '            {{- tool_call.name }}\n'
            '            {{- \'", "arguments": \' }}\n'
            '            {{- tool_call.arguments | tojson }}\n'
            "            {{- '}\\n</tool_call>' }}\n"
            '        {%- endfor %}\n'
            "        {{- '<|im_end|>\\n' }}\n"
            '    {%- elif message.role == "tool" %}\n'
            '        {%- if (loop.index0 == 0) or (messages[loop.inde'
            'x0 - 1].role != "tool") %}\n'
            "            {{- '<|im_start|>user' }}\n"
            '        {%- endif %}\n'
            "        {{- '\\n<tool_response>\\n' }}\n"
            '        {{- message.content }}\n'
            "        {{- '\\n</tool_response>' }}\n"
            '        {%- if loop.last or (messages[loop.index0 + 1].r'
            'ole != "tool") %}\n'
            "            {{- '<|im_end|>\\n' }}\n"
            '        {%- endif %}\n'
            '    {%- endif %}\n'
            '{%- endfor %}\n'
            '{%- if add_generation_prompt %}\n'
            "    {{- '<|im_start|>assistant\\n' }}\n"
            '{%- endif %}\n'
        ),
    ),
    'deepseekv3': Family(  # deepseek-ai/DeepSeek-V3
        'deepseek', '', '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', True,
        (
            '{% if not add_generation_prompt is defined %}{% set add_'
            'generation_prompt = false %}{% endif %}{% set ns = names'
            'pace(is_first=false, is_tool=false, is_output_first=true'
            ", system_prompt='', is_first_sp=true) %}{%- for message "
            "in messages %}{%- if message['role'] == 'system' %}{%- i"
            'f ns.is_first_sp %}{% set ns.system_prompt = ns.system_p'
            "rompt + message['content'] %}{% set ns.is_first_sp = fal"
            'se %}{%- else %}{% set ns.system_prompt = ns.system_prom'
            "pt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif"
            ' %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for'
            " message in messages %}{%- if message['role'] == 'user' "
            "%}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['"
            "content']}}{%- endif %}{%- if message['role'] == 'assist"
            "ant' and message['content'] is none %}{%- set ns.is_tool"
            " = false -%}{%- for tool in message['tool_calls']%}{%- i"
            "f not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜>"
            "<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + t"
            "ool['function']['name'] + '\\n' + '```json' + '\\n' + tool"
            "['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁"
            "end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\\n' "
            "+ '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' "
            "+ tool['function']['name'] + '\\n' + '```json' + '\\n' + t"
            "ool['function']['arguments'] + '\\n' + '```' + '<｜tool▁ca"
            "ll▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%"
            "- endif %}{%- endfor %}{%- endif %}{%- if message['role'"
            "] == 'assistant' and message['content'] is not none %}{%"
            "- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['co"
            "ntent'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = fa"
            "lse -%}{%- else %}{{'<｜Assistant｜>' + message['content']"
            " + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if"
            " message['role'] == 'tool' %}{%- set ns.is_tool = true -"
            "%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><"
            "｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁out"
            "put▁end｜>'}}{%- set ns.is_output_first = false %}{%- els"
            "e %}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '"
            "<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor"
            " -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endi"
            "f %}{% if add_generation_prompt and not ns.is_tool %}{{'"
            "<｜Assistant｜>'}}{% endif %}"
        ),
    ),
}
NOT_MATCHING: dict[str, Family] = {
    'deepseek-r1-distill': Family(  # deepseek-ai/DeepSeek-R1-Distill-Qwen-32B
        "", "", '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', True,
        (
            '{% if not add_generation_prompt is defined -%}\n'
            '  {%- set add_generation_prompt = false -%}\n'
            '{%- endif -%}\n'
            '{%- set ns = namespace(is_first=false, is_tool=false, is'
            "_output_first=true, system_prompt='') -%}\n"
            '{%- for message in messages -%}\n'
            "  {%- if message['role'] == 'system' -%}\n"
            "    {%- set ns.system_prompt = message['content'] -%}\n"
            '  {%- endif -%}\n'
            '{%- endfor -%}{{bos_token}}{{ns.system_prompt}}\n'
            '{%- for message in messages -%}\n'
            "  {%- if message['role'] == 'user' -%}\n"
            "    {%- set ns.is_tool = false -%}{{'<｜User｜>' + message"
            "['content']}}\n"
            '  {%- endif -%}\n'
            "  {%- if message['role'] == 'assistant' and message['too"
            "l_calls'] -%}\n"
            '    {%- set ns.is_tool = false -%}\n'
            "    {%- for tool in message['tool_calls']-%}\n"
            '      {%- if not ns.is_first -%}\n'
            "        {{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁"
            "begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['functio"
            "n']['name'] + '\\n' + '```json' + '\\n' + tool['function']"
            "['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}\n"
            '        {%- set ns.is_first = true -%}\n'
            '      {%- else -%}\n'
            "        {{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + "
            "'<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```j"
            "son' + '\\n' + tool['function']['arguments'] + '\\n' + '``"
            "`' + '<｜tool▁call▁end｜>'}}\n"
            '      {%- endif -%}\n'
            '    {%- endfor -%}\n'
            "    {{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}\n"
            '  {%- endif -%}\n'
            "  {%- if message['role'] == 'assistant' and message['con"
            "tent'] is not none -%}\n"
            "    {%- if ns.is_tool -%}{{'<｜tool▁outputs▁end｜>' + mess"
            "age['content'] + '<｜end▁of▁sentence｜>'}}\n"
            '      {%- set ns.is_tool = false -%}\n'
            '    {%- else -%}\n'
            "      {%- set content = message['content'] -%}\n"
            "      {%- if '</think>' in content -%}\n"
            "        {%- set content = content.split('</think>')[-1] "
            '-%}\n'
            "      {%- endif -%}{{'<｜Assistant｜>' + content + '<｜end▁"
            "of▁sentence｜>'}}\n"
            '    {%- endif -%}\n'
            '  {%- endif -%}\n'
            "  {%- if message['role'] == 'tool' -%}\n"
            '    {%- set ns.is_tool = true -%}\n'
            "    {%- if ns.is_output_first -%}{{'<｜tool▁outputs▁begin"
            "｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁"
            "output▁end｜>'}}\n"
            '      {%- set ns.is_output_first = false -%}\n'
            "      {%- else -%}{{'\\n<｜tool▁output▁begin｜>' + message["
            "'content'] + '<｜tool▁output▁end｜>'}}\n"
            '    {%- endif -%}\n'
            '  {%- endif -%}\n'
            '{%- endfor -%}\n'
            "{%- if ns.is_tool -%}{{'<｜tool▁outputs▁end｜>'}}\n"
            '{%- endif -%}\n'
            "{%- if add_generation_prompt and not ns.is_tool -%}{{'<｜"
            "Assistant｜><think>\\n'}}\n"
            '{%- endif %}'
        ),
    ),
    'command-r': Family(  # CohereForAI/c4ai-command-r-v01
        "", "", '<BOS_TOKEN>', '<|END_OF_TURN_TOKEN|>', True,
        (
            "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{"
            '% set loop_messages = messages[1:] %}{% set system_messa'
            "ge = messages[0]['content'] %}{% elif false == true %}{%"
            ' set loop_messages = messages %}{% set system_message = '
            "'You are Command-R, a brilliant, sophisticated, AI-assis"
            'tant trained to assist human users by providing thorough'
            " responses. You are trained by Cohere.' %}{% else %}{% s"
            'et loop_messages = messages %}{% set system_message = fa'
            "lse %}{% endif %}{% if system_message != false %}{{ '<|S"
            "TART_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message +"
            " '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% for message in "
            "loop_messages %}{% if (message['role'] == 'user') != (lo"
            "op.index0 % 2 == 0) %}{{ raise_exception('Conversation r"
            "oles must alternate user/assistant/user/assistant/...') "
            "}}{% endif %}{% set content = message['content'] %}{% if"
            " message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|>"
            "<|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN"
            "|>' }}{% elif message['role'] == 'assistant' %}{{ '<|STA"
            "RT_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() "
            "+ '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}{% if"
            " add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CH"
            "ATBOT_TOKEN|>' }}{% endif %}"
        ),
    ),
}

LONG_CHAT: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6."},
    {"role": "user", "content": "Thanks!"},
]


def tiny_gguf(path: Path, *, chat_template: str | None = None, bos: str | None = "<s>", eos: str | None = "</s>",
              add_bos: bool | None = None, arch: str = "llama", general_type: str | None = None,
              tensor: np.ndarray | None = None, file_type: int | None = None, extra: dict[str, Any] | None = None,
              ) -> Path:
    """A small valid GGUF: a five-token vocabulary, the given chat template and one tensor."""
    writer = gguf.GGUFWriter(str(path), arch)
    if general_type:
        writer.add_type(general_type)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", bos or "<bos>", eos or "<eos>", "a", "b"])
    if bos:
        writer.add_bos_token_id(1)
    if eos:
        writer.add_eos_token_id(2)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    if chat_template:
        writer.add_chat_template(chat_template)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    writer.add_tensor("token_embd.weight", tensor if tensor is not None else np.zeros((5, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def create_in_process(store: Store, gguf_path: Path, **spec: Any) -> list[dict[str, Any]]:
    """Run the create pipeline on a GGUF without a server; returns its progress objects."""
    digest, _ = store.import_file(gguf_path, link=False)
    creator = Creator(store, CreateSpec(model=spec.pop("model", "probe"), files={gguf_path.name: digest}, **spec))
    creator.prepare()
    return list(creator.run())


def layer_text(store: Store, name: str, media_type: str) -> str | None:
    manifest = store.read_manifest(name).manifest
    layer = manifest.first_layer(media_type)
    return None if layer is None else store.read_blob(layer.digest).decode()


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builtins_parse_and_carry_stop_tokens(name: str) -> None:
    text, params = builtin(name)
    template = parse(text)
    assert params["stop"] and all(isinstance(s, str) for s in params["stop"])
    assert go_capabilities(template) == ({"tools"} if name in ("qwen", "deepseek") else set())


@pytest.mark.e2e
@pytest.mark.parametrize("key", MATCHING)
def test_real_templates_are_recognised(key: str) -> None:
    family = MATCHING[key]
    found = detect(family.jinja, bos_token=family.bos, eos_token=family.eos, add_bos=family.add_bos)
    assert found is not None, key
    assert (found.name, found.system) == (family.builtin, family.system)
    assert (found.template, found.params) == builtin(family.builtin)


@pytest.mark.e2e
@pytest.mark.parametrize("key", MATCHING)
def test_builtin_renders_a_longer_chat_like_the_model(key: str) -> None:
    """Beyond detection's probes: five turns, with and without a system message."""
    family = MATCHING[key]
    template = parse(builtin(family.builtin)[0])
    chats: list[list[dict[str, Any]]] = [LONG_CHAT, [{"role": "system", "content": "Be brief."}, *LONG_CHAT]]
    renders = render_jinja(family.jinja, chats, bos_token=family.bos or "", eos_token=family.eos or "")
    assert renders is not None
    for chat, expected in zip(chats, renders, strict=True):
        if expected is None or (chat[0]["role"] == "system" and expected == renders[0]):
            continue  # the model's template refuses or ignores system messages
        if family.add_bos and family.bos:
            expected = expected.removeprefix(family.bos)
        default = [{"role": "system", "content": family.system}] if family.system and chat[0]["role"] != "system" \
            else []
        assert render_chat(template, [*default, *chat]) == expected


@pytest.mark.e2e
@pytest.mark.parametrize("key", NOT_MATCHING)
def test_templates_with_no_equivalent_are_left_to_the_engine(key: str) -> None:
    family = NOT_MATCHING[key]
    assert detect(family.jinja, bos_token=family.bos, eos_token=family.eos) is None


@pytest.mark.parametrize(
    "jinja",
    [
        "",
        "{% for m in messages %}{{ m.content }",  # does not compile
        "{{ raise_exception('no') }}",
        "{{ messages[0]['content'] }}",  # renders, matches nothing
        "x" * (300 * 1024),  # over the size limit
        "{{ 'x' * 100000000000 }}",  # memory: the child's limit stops it
    ],
)
@pytest.mark.e2e
def test_unusable_templates_give_no_match(jinja: str) -> None:
    assert detect(jinja, bos_token="<s>", eos_token="</s>") is None


@pytest.mark.e2e
def test_a_template_that_never_ends_is_cut_off() -> None:
    jinja = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    assert detect(jinja, bos_token="<s>", eos_token="</s>", timeout=3) is None
    assert time.monotonic() - started < 8


@pytest.mark.e2e
def test_thinking_or_tools_are_not_given_up() -> None:
    """A builtin with fewer capabilities than the Jinja template is refused, even when it renders the same."""
    chatml_with_tools_mention = MATCHING["openhermes"].jinja + "{# tools #}"
    found = detect(chatml_with_tools_mention, bos_token="<s>", eos_token="</s>")
    assert found is not None and found.name == "qwen"  # the chatml-compatible builtin that handles tools
    with_think = MATCHING["openhermes"].jinja + "{# <think></think> #}"
    assert detect(with_think, bos_token="<s>", eos_token="</s>") is None


def test_qwen_and_deepseek_render_tools_and_results() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "required": ["city"],
                                                              "properties": {"city": {"type": "string"}}}}}]
    chat: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C"},
        {"role": "tool", "content": "sunny"},
    ]
    qwen = render_chat(parse(builtin("qwen")[0]), [{"role": "system", "content": "S"}, *chat], tools=tools)
    assert qwen.startswith("<|im_start|>system\nS\n\n# Tools\n")
    assert '{"type": "function", "function": {"name":"get_weather"' in qwen
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call><|im_end|>\n' in qwen
    assert qwen.endswith("<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n<tool_response>\nsunny\n"
                         "</tool_response><|im_end|>\n<|im_start|>assistant\n")
    deepseek = render_chat(parse(builtin("deepseek")[0]), chat, tools=tools)
    assert "## Tools" in deepseek and '"name":"get_weather"' in deepseek
    assert ("<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
            '{"city":"Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>') in deepseek
    assert deepseek.endswith("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>\n"
                             "<｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemma", "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"),
        ("mistral", "[INST] Be brief.\n\nHi [/INST]"),
        ("llama3", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
                   "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    ],
)
def test_system_prompts_where_the_format_has_no_system_turn(name: str, expected: str) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(parse(builtin(name)[0]), chat) == expected


# ---------------------------------------------------------------------------------------------------------------
# through the create pipeline, from GGUF files


@pytest.mark.e2e
@pytest.mark.parametrize("key", MATCHING)
def test_gguf_import_adds_template_stop_and_system_layers(tmp_path: Path, key: str) -> None:
    family = MATCHING[key]
    path = tiny_gguf(tmp_path / f"{key}.gguf", chat_template=family.jinja, bos=family.bos, eos=family.eos,
                     add_bos=family.add_bos)
    store = Store(tmp_path / "models")
    events = create_in_process(store, path, model=key)
    assert {"status": f"using autodetected template {family.builtin}"} in events
    text, params = builtin(family.builtin)
    assert layer_text(store, key, mf.MEDIA_TEMPLATE) == text
    assert json.loads(layer_text(store, key, mf.MEDIA_PARAMS) or "{}") == params
    assert layer_text(store, key, mf.MEDIA_SYSTEM) == (family.system or None)


@pytest.mark.e2e
def test_gguf_without_a_known_template_gets_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    for key, family in NOT_MATCHING.items():
        path = tiny_gguf(tmp_path / f"{key}.gguf", chat_template=family.jinja, bos=family.bos, eos=family.eos)
        events = create_in_process(store, path, model=key)
        assert not any("autodetected" in e["status"] for e in events)
        assert store.read_manifest(key).manifest.first_layer(mf.MEDIA_TEMPLATE) is None
    plain = tiny_gguf(tmp_path / "plain.gguf")
    create_in_process(store, plain, model="plain")
    assert [layer.media_type for layer in store.read_manifest("plain").manifest.layers] == [mf.MEDIA_MODEL]


@pytest.mark.e2e
def test_bundled_smollm2_is_chatml(tmp_path: Path) -> None:
    source = bundled_file(*SMOL_FILE)
    store = Store(tmp_path / "models")
    link = tmp_path / "smollm2.gguf"
    link.symlink_to(source)
    events = create_in_process(store, link, model="smol")
    assert {"status": "using autodetected template chatml"} in events
    assert layer_text(store, "smol", mf.MEDIA_TEMPLATE) == builtin("chatml")[0]
    assert layer_text(store, "smol", mf.MEDIA_SYSTEM) == MATCHING["smollm2"].system
