"""The HTML productpage renders (istio/istio samples/bookinfo/src/productpage/templates/
productpage.html), reduced to what a reader and a test look for: the signed-in user, the book,
its details or "Error fetching product details", and the reviews, each with its stars (filled
ones in the review's colour, class ``text-<color>-500`` as the template writes it) or its
rating error, or "Error fetching product reviews" and the reason."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["PRODUCT", "productpage_html"]

PRODUCT: dict[str, Any] = {
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia '
                       "Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> "
                       "early plays. It is his shortest and one of his most farcical comedies, "
                       "with a major part of the humour coming from slapstick and mistaken "
                       "identity, in addition to puns and word play.",
}
"""productpage.py getProducts(): the one book."""

_DETAIL_COLUMNS = (("ISBN-10", "ISBN-10"), ("Publisher", "publisher"), ("Pages", "pages"),
                   ("Type", "type"), ("Language", "language"))


def _details(status: int, details: dict[str, Any]) -> str:
    if status != 200:
        return ('<p class="text-red-500">Error fetching product details</p>'
                f'<p class="error">{escape(str(details.get("error", "")))}</p>')
    head = "".join(f"<th>{name}</th>" for name, _ in _DETAIL_COLUMNS)
    row = "".join(f"<td>{escape(str(details.get(key, '')))}</td>" for _, key in _DETAIL_COLUMNS)
    return f"<h4>Book Details</h4><table><tr>{head}</tr><tr>{row}</tr></table>"


def _rating(rating: Any) -> str:
    if not isinstance(rating, dict):
        return ""
    stars = rating.get("stars")
    if isinstance(stars, int) and stars:
        color = escape(str(rating.get("color", "")))
        return (f'<div class="stars text-{color}-500" data-stars="{stars}">'
                f'{"&#9733;" * stars}{"&#9734;" * (5 - stars)}</div>')
    if rating.get("error"):
        return f'<p class="text-red-500">{escape(str(rating["error"]))}</p>'
    return ""


def _reviews(status: int, reviews: dict[str, Any]) -> str:
    if status != 200:
        return ('<p class="text-red-500">Error fetching product reviews</p>'
                f'<p class="error">{escape(str(reviews.get("error", "")))}</p>')
    sections = []
    for review in reviews.get("reviews", []):
        sections.append(
            f"<section>{_rating(review.get('rating'))}"
            f"<blockquote><p>\"{escape(str(review.get('text', '')))}\"</p></blockquote>"
            f"<div class=\"reviewer\">{escape(str(review.get('reviewer', '')))}</div>"
            f"<div>Reviews served by: {escape(str(reviews.get('podname', '')))}</div></section>")
    return "<h4>Book Reviews</h4>" + "".join(sections)


def productpage_html(user: str, details: tuple[int, dict[str, Any]],
                     reviews: tuple[int, dict[str, Any]]) -> str:
    signed_in = (f'<p class="user">{escape(user)}</p><a href="logout">Sign out</a>' if user
                 else '<form method="post" action="login"><input name="username">'
                      '<input name="passwd" type="password"><button>Sign in</button></form>')
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Simple Bookstore App"
            f"</title></head><body><nav>BookInfo Sample {signed_in}</nav>"
            f"<h1>{escape(PRODUCT['title'])}</h1><p>{PRODUCT['descriptionHtml']}</p>"
            f"<div id=\"details\">{_details(*details)}</div>"
            f"<div id=\"reviews\">{_reviews(*reviews)}</div></body></html>\n")
