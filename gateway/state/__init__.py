"""What the gateway keeps per conversation beside the store: small state objects, each rebuilt
from the stored events when a process starts without it (DESIGN.md: "what it keeps per
conversation belongs in state/, not in dicts on the pipeline")."""
