"""The benchmark client's frame parser gives exactly what ``json.loads`` gives."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "bench"))
from bench_client import parse_frame

BODY = base64.b64encode(bytes(range(256)) * 64).decode()  # 21848 characters

FRAMES = [
    # The shapes both servers send: a first frame with status and headers, then body frames.
    {"message_id": "1", "status": 200, "statusText": "OK", "headers": {"X": "y"}, "data": BODY,
     "done": False},
    {"message_id": "1", "data": BODY, "done": True},
    # Frames the fast path must leave to json.
    {"message_id": "2", "data": BODY[:100] + "\\/" + BODY[100:], "done": True},  # an escape
    {"message_id": "3", "headers": {"data": "v"}, "data": BODY, "done": True},  # nested key
    {"message_id": "4", "headers": {'x"data': "v" * 5000}, "done": True},  # quoted lookalike
    {"message_id": "5", "body": BODY, "done": True},  # no data key
    {"message_id": "6", "data": "", "done": True, "pad": BODY},  # empty data
    {"message_id": "7", "data": 17, "pad": BODY},  # not a string
    {"message_id": "8", "data": None, "pad": BODY},
]  # fmt: skip


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")], ids=["spaced", "compact"])
@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f["message_id"])
def test_parse_frame_matches_json(frame: dict[str, object], separators: tuple[str, str]) -> None:
    # json.dumps's default separators are the original's; trio_httpws writes compact frames.
    message = json.dumps(frame, separators=separators)
    assert parse_frame(message) == json.loads(message) == frame


def test_parse_frame_repeated_key_keeps_the_last_like_json() -> None:
    message = f'{{"data": "{BODY}", "message_id": "1", "data": ""}}'
    assert parse_frame(message) == json.loads(message) == {"data": "", "message_id": "1"}


def test_parse_frame_refuses_what_json_refuses() -> None:
    with pytest.raises(json.JSONDecodeError, match="property name"):
        parse_frame(f'{{"data": "{BODY}", }}')
