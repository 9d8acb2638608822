"""The voice IVR: menus from config.yaml (``menu``), a pure call state machine (``call``) and
its TwiML (``twiml``). The thin I/O layer is the channel adapter, adapters/ivr."""

from .call import Call, Machine, Step
from .menu import Menu, MenuProblems, Phrases, Waiting

__all__ = ["Call", "Machine", "Menu", "MenuProblems", "Phrases", "Step", "Waiting"]
