""""Did you mean" and "did this help?" on Telegram: the choices as an inline keyboard at the Bot
API stand-in, a button press (callback_query to the real gateway's webhook) taken as the pick."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support_telegram import post_update, serve_api, start, telegram_config
from telegram_api import BotApi, callback, message

MEI = 5553101


def keyboard(call: Any) -> list[tuple[str, str]]:
    return [(b["text"], b["callback_data"]) for row in call.json("reply_markup")["inline_keyboard"] for b in row]


async def press(gateway: Any, api: BotApi, sent: Any, data: str, query_id: str) -> None:
    on = message(MEI, sent.params["text"], reply_markup=sent.json("reply_markup"))
    update = {"update_id": api.new_update_id(), "callback_query": callback(MEI, data, on, query_id=query_id)}
    assert (await post_update(gateway, update))[0] == 200


async def test_choices_are_buttons_and_a_press_is_the_pick(tmp_path: Path, sqlite_url: str) -> None:
    async with serve_api() as api:
        config = telegram_config(sqlite_url, api)
        config["selfservice"].update(min_score=0.9, choices_min_score=0.24)
        gateway = await start(tmp_path, config)
        try:
            update = {"update_id": api.new_update_id(), "message": message(MEI, "parcel broken")}
            assert (await post_update(gateway, update))[0] == 200
            greeting, asked = await api.wait_for("sendMessage", 2, MEI)
            assert asked.params["text"] == "Did you mean one of these?"
            buttons = keyboard(asked)
            assert [value for _, value in buttons] == ["damaged-parcel", "track-parcel", "signature-proof"]
            assert buttons[0][0] == "My parcel arrived damaged, what should I do?"

            await press(gateway, api, asked, "damaged-parcel", "q1")
            answer = (await api.wait_for("sendMessage", 3, MEI))[-1]
            assert answer.params["text"].startswith("Sorry about that.")
            assert answer.params["text"].endswith("Did this help?")
            assert keyboard(answer) == [("Yes", "yes"), ("No", "no")]
            await api.wait_for("answerCallbackQuery", 1)

            await press(gateway, api, answer, "yes", "q2")
            glad = (await api.wait_for("sendMessage", 4, MEI))[-1]
            assert glad.params["text"] == "Glad I could help!" and not glad.params.get("reply_markup")
        finally:
            await gateway.stop()
