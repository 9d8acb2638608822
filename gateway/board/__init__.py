"""The live supervisor board (``/board``, docs/pages.md "Supervisor board"): per queue the
figures of ``/api/queues`` with a colour from the forecast (routing/forecast.py), the waiting
conversations about to breach, the agents with their load and time in state, and per-minute
history for the charts; pushed over ``/board/ws`` to signed-in supervisors.

- ``settings.py``: the ``board:`` config section;
- ``figures.py``: the snapshot (one function, also ``GET /api/board``);
- ``history.py``: the per-minute samples in the store;
- ``feed.py``: the websocket and the push.

Nothing is imported here: ``gateway.config`` imports ``settings`` before the pipeline exists.
"""
