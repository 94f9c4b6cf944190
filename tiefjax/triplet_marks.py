"""Marks made in the similarity editor, expanded into triplets.

An annotator marks candidates for a reference as **same product** (another photo of the
reference's product), **more similar** or **less similar**. The marks rank the candidates
(same product > more similar > less similar), and every ranked pair is a triplet:

- for the reference: ``(reference, a, b)`` for every marked ``a`` ranked above a marked ``b``;
- for the group: the reference and its same-product photos show one product, so each of those
  photos is a reference too, closer to every other member of the group than to any candidate
  marked more or less similar: ``(s, g, b)`` for each same-product ``s``, each other member
  ``g`` and each ``b`` marked more or less similar.

With ``s`` same, ``m`` more and ``l`` less that is ``s·(m+l) + m·l + s²·(m+l)`` triplets, or
``s·(s+1)·(m+l) + m·l`` (:func:`count`, which the site shows before saving).
"""

from __future__ import annotations

from collections.abc import Sequence

from tiefjax.errors import InvalidInput

#: The most triplets one save may expand into (the editor shows 24 candidates: 24 same-product
#: marks alone expand into 0, 12 same + 12 less into 1,872).
MAX_TRIPLETS = 2000
#: The most images one list of marks may hold.
MAX_MARKS = 100


def count(same: int, more: int, less: int) -> int:
    """How many triplets these numbers of marks expand into."""
    return same * (same + 1) * (more + less) + more * less


def expand(
    reference: str, same: Sequence[str], more: Sequence[str], less: Sequence[str]
) -> list[tuple[str, str, str]]:
    """The triplets (reference, positive, negative) the marks stand for, in a stable order.

    Raises InvalidInput when an image is marked twice, is the reference, or the marks expand
    into nothing or into more than :data:`MAX_TRIPLETS`.
    """
    marked = [*same, *more, *less]
    repeated = sorted({i for i in marked if marked.count(i) > 1})
    if repeated:
        raise InvalidInput(f"each image takes one mark; marked more than once: {repeated[:5]}")
    if reference in marked:
        raise InvalidInput(f"the reference {reference!r} cannot be marked against itself")
    total = count(len(same), len(more), len(less))
    if total == 0:
        raise InvalidInput(
            "these marks make no triplet: mark at least one image less similar (or more "
            "similar) besides a same-product or more-similar one"
        )
    if total > MAX_TRIPLETS:
        raise InvalidInput(
            f"these marks expand into {total} triplets, more than {MAX_TRIPLETS} at once; "
            "save them in smaller groups"
        )
    ranked = [(i, 2) for i in same] + [(i, 1) for i in more] + [(i, 0) for i in less]
    triplets = [(reference, a, b) for a, ra in ranked for b, rb in ranked if ra > rb]
    group = [reference, *same]
    others = [*more, *less]
    for s in same:
        triplets += [(s, g, b) for g in group if g != s for b in others]
    return triplets
