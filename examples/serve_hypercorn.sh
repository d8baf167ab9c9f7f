#!/bin/sh
# Serve trio_httpws with hypercorn's trio worker, configured through the environment.
#
#   TRIO_HTTPWS_BACKEND=http://127.0.0.1:8888 sh examples/serve_hypercorn.sh
#
# serves the proxy on http://127.0.0.1:8889 in front of the Jupyter server at
# TRIO_HTTPWS_BACKEND, for pages on TRIO_HTTPWS_ALLOW_ORIGIN (default: Colab). Paste your Jupyter
# token URL with the proxy's port (http://127.0.0.1:8889/?token=...) into the front end; the
# proxy's port also serves Jupyter's own web UI and REST API.
#
# It runs exactly:
#   hypercorn --worker-class trio --bind 127.0.0.1:8889 trio_httpws:app
# reading these variables (the README lists every TRIO_HTTPWS_* setting):
#   TRIO_HTTPWS_BACKEND           the Jupyter server           (default http://127.0.0.1:8888)
#   TRIO_HTTPWS_ALLOW_ORIGIN      allowed origins, comma-separated, or "*"
#                     (default https://colab.research.google.com,https://colab.google.com)
#   TRIO_HTTPWS_ALLOW_ORIGIN_PAT  a regular expression of further allowed origins
#   BIND                          hypercorn's address          (default 127.0.0.1:8889)
# Further arguments go to hypercorn, e.g. --certfile cert.pem --keyfile key.pem for https/wss.
# (hypercorn's own limit applies to WebSocket messages: 16 MiB unless a hypercorn config file,
# -c, sets websocket_max_message_size.)
# trio_httpws:app reads the TRIO_HTTPWS_* variables itself, when hypercorn first uses it.
set -eu
exec hypercorn --worker-class trio --bind "${BIND:-127.0.0.1:8889}" "$@" trio_httpws:app
