"""The agent desk's smaller jobs, each in a module of its own: the directory an agent transfers
from (``directory``), how far each side of a conversation has read (``reads``), the
satisfaction question (``satisfaction``) and a close's disposition (``dispositions``)."""
