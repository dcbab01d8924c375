"""A1111's `modules.prompt_parser` for extensions: its prompt language, answered by the project's parser
(`modules/prompts/`: `schedules`, `attention`, `splitting`), in A1111's shapes (lists of lists, as its doctests
show). The functions that encode a prompt with A1111's model object (`get_learned_conditioning`,
`reconstruct_cond_batch`, …) have no equivalent on diffusers and raise `missing_name`.
"""
from __future__ import annotations

import re
from collections import namedtuple

from modules.addons.missing_names import missing_name
from modules.prompts import attention, schedules, splitting

# A1111's regexes, for extensions that use them directly.
re_attention = attention.RE_ATTENTION   # A1111's tokenizer, the one the project's parser uses
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)
re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    """A1111's list of prompts for the conditioner, with the image size (SDXL) and whether they are negative."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """For each prompt, `[[end_at_step, text], …]` (prompt editing and alternation), as A1111's:
    `(["a [b:c:0.5]"], 10)` → `[[[5, 'a b'], [10, 'a c']]]`."""
    found = schedules.get_schedules(list(prompts), base_steps, hires_steps, use_old_scheduling)
    return [[[step, text] for step, text in schedule] for schedule in found]


def parse_prompt_attention(text):
    """Emphasis: `'an (important) word'` → `[['an ', 1.0], ['important', 1.1], [' word', 1.0]]`."""
    return [[piece, weight] for piece, weight in attention.parse_prompt_attention(text)]


def get_multicond_prompt_list(prompts):
    """Composable prompts (`a AND b :0.7`): (for each prompt its [(index, weight)], the distinct texts as an
    SdConditioning, text → index), as A1111's."""
    indexes_per_prompt = []
    index_of: dict[str, int] = {}
    flat = SdConditioning(prompts)
    flat.clear()
    for prompt in prompts:
        indexes = []
        for text, weight in splitting.split_and(prompt):
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            indexes.append((index_of[text], weight))
        indexes_per_prompt.append(indexes)
    return indexes_per_prompt, flat, index_of


_NOT_HERE = ("prompts are encoded inside the generation by the project's text encoder (diffusers); use "
             "get_learned_conditioning_prompt_schedules for the schedule, or a script hook for the embeddings")


def __getattr__(name: str):
    # get_learned_conditioning, get_multicond_learned_conditioning, reconstruct_cond_batch, schedule_parser, …
    raise missing_name("modules.prompt_parser", name, _NOT_HERE)
