"""What each image of a job is made from: its prompt, negative prompt, seed and variation seed (A1111's
`p.all_prompts`, `all_negative_prompts`, `all_seeds`, `all_subseeds`), and which batches share their networks.

A request has one prompt; a script (wildcards, dynamic prompts) may give each image its own (`ImagePrompts`).
Each distinct prompt is prepared (styles, network tags out) once.
"""
from __future__ import annotations

from modules import extra_networks
from modules.diffusion import noise
from modules.extra_networks import PreparedPrompt
from modules.generation.context import ImagePrompts, JobContext


def _per_image(values: list | None, default, count: int) -> list:
    """`count` values: the script's list (a short one goes on with its last value), or the default for each."""
    if not values:
        return [default] * count
    values = list(values)
    return (values + values[-1:] * count)[:count]


def prepare(request, chosen: ImagePrompts, networks) -> list[PreparedPrompt]:
    """Each image's prepared prompt. The request's prompt gets its styles here; a script's prompts have them
    already (A1111 applies styles before `process()` sees `p.all_prompts`)."""
    count = request.batch_size * request.n_iter
    if chosen.prompts is None and chosen.negative_prompts is None:
        return [extra_networks.prepare_prompt(request.prompt, request.negative_prompt, request.styles,
                                              networks)] * count
    styled, styled_negative = networks.styles.apply(request.prompt, request.negative_prompt, request.styles)
    pairs = list(zip(_per_image(chosen.prompts, styled, count),
                     _per_image(chosen.negative_prompts, styled_negative, count)))
    prepared: dict[tuple[str, str], PreparedPrompt] = {}
    for prompt, negative in pairs:
        if (prompt, negative) not in prepared:
            prepared[prompt, negative] = extra_networks.prepare_prompt(str(prompt), str(negative), [], networks)
    return [prepared[pair] for pair in pairs]


def seeds(request, chosen: ImagePrompts) -> tuple[list[int], list[int]]:
    """Each image's seed and variation seed. A1111: consecutive seeds, except with a variation strength, where
    every image keeps the seed and only the variation seeds count up."""
    count = request.batch_size * request.n_iter
    seed, subseed = noise.resolve_seed(request.seed), noise.resolve_seed(request.subseed)
    default_seeds = [seed + (index if request.subseed_strength == 0 else 0) for index in range(count)]
    default_subseeds = [subseed + index for index in range(count)]
    return ([int(value) for value in chosen.seeds[:count]] + default_seeds[len(chosen.seeds):] if chosen.seeds
            else default_seeds,
            [int(value) for value in chosen.subseeds[:count]] + default_subseeds[len(chosen.subseeds):]
            if chosen.subseeds else default_subseeds)


def _networks_of(prepared: PreparedPrompt) -> tuple:
    return (tuple((getattr(info, "name", info), *weights) for info, *weights in prepared.loras),
            tuple((getattr(info, "name", info), *weights) for info, *weights in prepared.hypernetworks))


def network_groups(ctx: JobContext) -> list[tuple[PreparedPrompt, list[int]]]:
    """Runs of consecutive batches that use the same LoRAs and hypernetworks, with the prompt that names them:
    A1111 takes a batch's networks from its first prompt. One group unless a script gave the batches prompts
    with different networks."""
    groups: list[tuple[PreparedPrompt, list[int]]] = []
    for batch_index in range(ctx.request.n_iter):
        first = ctx.batch_prepared(batch_index)[0]
        if groups and _networks_of(groups[-1][0]) == _networks_of(first):
            groups[-1][1].append(batch_index)
        else:
            groups.append((first, [batch_index]))
    return groups
