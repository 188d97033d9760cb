"""Click options declared from a frozen config's fields (lensdb/extract/config.py's `option`):
one field, one command-line option, with the field's default, help and checks' types."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click

from lensdb.extract.config import option_of


def config_options(config_class, before: dict | None = None):
    """A decorator adding a click option for every field of `config_class` that has a flag,
    in field order; `before` maps a field name to option decorators placed ahead of it
    (options of the command itself, such as extract's --json)."""
    before = before or {}

    def decorate(command):
        declared = []
        for config_field in fields(config_class):
            declared += before.get(config_field.name, [])
            if option_of(config_field).flag is not None:
                declared.append(click_option(config_field))
        for declare in reversed(declared):  # click lists options in the order the decorators are written
            command = declare(command)
        return command

    return decorate


def click_option(config_field):
    opt = option_of(config_field)
    settings: dict = {"help": opt.help}
    default = None if config_field.default is MISSING else config_field.default
    if opt.is_flag:
        settings["is_flag"] = True
    elif opt.multiple:
        settings["multiple"] = True
    elif default is not None:
        settings["default"] = opt.as_text(default) if not isinstance(default, (int, float)) else default
    if opt.show_default:
        settings["show_default"] = True
    if opt.metavar:
        settings["metavar"] = opt.metavar
    if opt.choices is not None:
        settings["type"] = click.Choice(list(opt.choices))
    elif opt.minimum is not None:
        settings["type"] = click.IntRange(min=opt.minimum)
    elif opt.number:
        settings["type"] = int
    elif opt.folder:
        settings["type"] = click.Path(file_okay=False)
    return click.option(opt.flag, config_field.name, **settings)
