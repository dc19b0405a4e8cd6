"""Sign-in and sign-out."""

from __future__ import annotations

from flask import Blueprint, render_template

from portal.access import public
from portal.auth import service
from portal.extensions import login_manager

bp = Blueprint("auth", __name__)

login_manager.user_loader(service.load_user)
login_manager.login_view = "auth.login"


@bp.get("/login")
@public
def login():
    return render_template("auth/login.html")
