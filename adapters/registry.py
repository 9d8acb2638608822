"""Channel type -> adapter module. Each module exposes ``Settings`` (a pydantic model of the
channel's own config keys) and ``create(name, settings, gateway) -> Adapter``.

Modules are imported lazily so a deployment pays only for the channels it configures.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from .base import Adapter, GatewayPort

ADAPTERS: dict[str, str] = {
    "webchat": "adapters.webchat",
    "email": "adapters.email.channel",
    "telegram": "adapters.telegram.channel",
    "ivr": "adapters.ivr.channel",
}


def known_types() -> set[str]:
    return set(ADAPTERS)


def _module(channel_type: str) -> ModuleType:
    try:
        return importlib.import_module(ADAPTERS[channel_type])
    except KeyError:
        raise ValueError(f"unknown channel type {channel_type!r}") from None


def validate_settings(channel_type: str, settings: dict[str, Any]) -> BaseModel:
    """Raise pydantic.ValidationError when the channel's own keys are wrong."""
    return _module(channel_type).Settings.model_validate(settings)


def create(channel_type: str, name: str, settings: dict[str, Any], gateway: GatewayPort) -> Adapter:
    module = _module(channel_type)
    return module.create(name, module.Settings.model_validate(settings), gateway)
