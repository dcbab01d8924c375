"""Prompts: A1111's prompt language, and a prompt turned into what the text encoder and the UNet get.

The language (no torch in these three): `splitting` takes a prompt apart (comments, `<lora:…>` tags, AND parts),
`attention` weighs its words (emphasis, BREAK), `schedules` says which text it stands for at each step (prompt
editing, alternation). Then `chunks` lays the words into 75-token chunks, `conditioning` encodes them, `composable`
samples AND parts together, `limits` caps what one prompt may ask for, `styles` holds `styles.csv`.
"""
