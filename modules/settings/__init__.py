"""What settings there are: one option's definition (`option_info.OptionInfo`: default, label, section, bounds,
A1111's chainable helpers) and the built-in table of options and sections (`table`).

The values themselves are kept by `modules/options.py` (`Options`, persisted to config.json; `Settings`, the values
frozen for one job), which is also where the rest of the code imports these names from.
"""
