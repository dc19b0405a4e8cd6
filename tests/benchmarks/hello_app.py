"""The baseline of the load benchmarks: Flask's hello world, served by the same gunicorn; the
tracking benchmark's baseline answers with the same GIF and the same kind of redirect."""

import base64

from flask import Flask, redirect

# The open pixel's GIF (portal.delivery.views.PIXEL), without importing the portal.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, World!"


@app.get("/pixel.gif")
def pixel():
    return PIXEL, 200, {"Content-Type": "image/gif"}


@app.get("/redirect")
def redirect_away():
    return redirect("https://www.example.com/offer", code=302)
