"""The benchmark client's frame parser gives exactly what ``json.loads`` gives."""

from __future__ import annotations

import base64
import json

import pytest

from bench.bench_client import parse_frame

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


# Texts json.dumps does not write: each must still parse (or fail) exactly as json's.
ODD = [
    f'{{"data": "{BODY}", "message_id": "1", "data": ""}}',  # repeated: the last counts
    f'{{"data": "{BODY}", "data" : ""}}',  # repeated, the second spaced before its colon
    f'{{"headers": {{"data": "{BODY}"}}, "data" : ""}}',  # nested first, then spaced
    f'{{"x\\"data": "{BODY}", "data" :""}}',  # a lookalike key with an escaped quote
    f'{{"\\u0064ata": "", "data": "{BODY}"}}',  # an escaped key before the plain one
    f'{{"data": "{BODY}", "\\u0064ata": ""}}',  # ... and after it
    f'{{"data": "{BODY}", "x": "\\u0000"}}',  # the marker elsewhere
    f'{{"data":\t"{BODY}"}}',  # a tab after the colon
    f'{{"data": "{BODY[:100]}\t{BODY[100:]}"}}',  # a raw tab in the string: invalid JSON
    f'{{"data": "{BODY[:100]}\u00e9{BODY[100:]}"}}',  # not base64, valid JSON
    f'[{{"data": "{BODY}"}}]',  # not an object
    f'{{"data": "{BODY}", }}',  # invalid JSON
]


@pytest.mark.parametrize("message", ODD, ids=range(len(ODD)))
def test_parse_frame_matches_json_on_odd_texts(message: str) -> None:
    try:
        expected = json.loads(message)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            parse_frame(message)
    else:
        assert parse_frame(message) == expected
