"""timm architecture names checked when the config loads."""

from __future__ import annotations

import difflib


def timm_arch_problem(arch: str) -> str | None:
    """Why timm has no model ``arch`` (with the closest names it has), or None when it has
    one. Checked at load: the model is built after every image is decoded and the run folder
    is made, minutes into a large image set, for a typo such as 'resnet181'."""
    import timm

    if timm.is_model(arch):  # a pretrained tag too: 'convnext_tiny.fb_in22k'
        return None
    close = difflib.get_close_matches(arch.split(".", 1)[0], timm.list_models(), n=3)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return f"timm has no model {arch!r}{hint} (timm.list_models('pattern*') lists them)"
