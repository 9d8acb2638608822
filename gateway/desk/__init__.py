"""The agent desk's smaller jobs, each in a module of its own: the directory an agent transfers
from (``directory``), and how far each side of a conversation has read (``reads``)."""
