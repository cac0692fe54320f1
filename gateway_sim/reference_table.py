"""The TPL table the service ships (server/reference_data/usmca-mx.json), read as the public document it
is: the simulator takes its numbers and labels from the file, never from the server's code."""
from __future__ import annotations

import json
import pathlib

PACKAGED = pathlib.Path(__file__).resolve().parents[1] / "server" / "reference_data" / "usmca-mx.json"


def tpl_labels(path: pathlib.Path = PACKAGED) -> dict[str, str]:
    """Each TPL number's label ("TPL 1"), as the table names it."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return {tpl["tpl_number"]: tpl["label"] for tpl in document["tpls"]}
