"""The one parser of config variants: `file.py:<words and key=value items, comma-separated>`.

    parse("face+pose,fold=2", options=("fold",), words=("demo",))
    -> Variant(modalities=['face', 'pose'], words=set(), options={'fold': '2'})

The first item may be a '+'-joined modality subset; bare words must be among `words`; key=value
options among `options`. Anything else is a one-line error naming the file and what it knows.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Variant:
    modalities: list[str]
    words: set[str]
    options: dict[str, str]


def parse(arg: str | None, *, file: str, options=(), words=(), default_modalities: str = "") -> Variant:
    items = [a.strip() for a in (arg or "").split(",") if a.strip()]
    opts = dict(a.split("=", 1) for a in items if "=" in a)
    bare = [a for a in items if "=" not in a]
    found_words = {a for a in bare if a in words}
    rest = [a for a in bare if a not in words]
    unknown = sorted(set(opts) - set(options))
    if unknown:
        raise ValueError(f"configs/{file}: unknown option(s) {unknown}; known: {', '.join(options) or 'none'}"
                         + (f" and the words {', '.join(words)}" if words else "") + ".")
    if len(rest) > 1:
        raise ValueError(f"configs/{file}: unexpected variant items {rest[1:]}; give one modality subset "
                         f"(e.g. face+pose), then key=value options ({', '.join(options)}).")
    subset = rest[0] if rest else default_modalities
    return Variant(modalities=[m for m in subset.split("+") if m], words=found_words, options=opts)
