"""The words a POSIX shell makes of a command line, with which characters it takes literally.

``words(text)`` splits like sh does (blanks and the operators ``; & | ( ) < >`` end a word; quotes and
backslashes are removed) and marks each character of each word ``literal`` when the shell cannot expand
it: inside single quotes, escaped by a backslash, inside double quotes except ``$`` and backquote, or an
unquoted character with no special meaning. A ``$(...)``, ``${...}`` or backquoted substitution stays in
its word, every character of it marked not literal.

Tests use it to prove that a value from the cluster file reached a host as one word the shell keeps as
written: the whole value inside one word, every character of it literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_OPERATORS = ";&|()<>"
_BLANKS = " \t\n"
# Unquoted characters the shell expands or gives a meaning inside a word.
_ACTIVE = "$`*?[]{}~!\\\"'"


@dataclass
class Word:
    text: str = ""
    literal: list[bool] = field(default_factory=list)

    def add(self, ch: str, literal: bool) -> None:
        self.text += ch
        self.literal.append(literal)

    def holds_literally(self, value: str) -> bool:
        """``value`` occurs in this word with every character of that occurrence literal."""
        start = self.text.find(value)
        while start >= 0:
            if all(self.literal[start:start + len(value)]):
                return True
            start = self.text.find(value, start + 1)
        return False


def _substitution(text: str, i: int) -> int:
    """Index just past the substitution starting at text[i] (``$(``, ``${``, ``$((`` or a backquote)."""
    if text[i] == "`":
        j = i + 1
        while j < len(text) and text[j] != "`":
            j += 2 if text[j] == "\\" else 1
        return min(j + 1, len(text))
    close = ")" if text[i + 1] == "(" else "}"
    opening = text[i + 1]
    depth, j, quote = 1, i + 2, ""
    while j < len(text) and depth:
        ch = text[j]
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            j += 1
        elif quote == '"':
            quote = "" if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch == opening:
            depth += 1
        elif ch == close:
            depth -= 1
        j += 1
    return j


def words(text: str) -> list[Word]:
    """The words of ``text`` (operators and comments left out), see the module docstring."""
    out: list[Word] = []
    word: Word | None = None
    i, n = 0, len(text)

    def current() -> Word:
        nonlocal word
        if word is None:
            word = Word()
        return word

    def end() -> None:
        nonlocal word
        if word is not None:
            out.append(word)
        word = None

    while i < n:
        ch = text[i]
        if ch in _BLANKS or ch in _OPERATORS:
            end()
            i += 1
        elif ch == "#" and word is None:
            while i < n and text[i] != "\n":
                i += 1
        elif ch == "'":
            j = text.index("'", i + 1)
            w = current()
            for c in text[i + 1:j]:
                w.add(c, True)
            current()  # '' is an (empty) word too
            i = j + 1
        elif ch == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                current().add(text[i + 1], True)
            i += 2
        elif ch == '"':
            w = current()
            i += 1
            while i < n and text[i] != '"':
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
                    if text[i + 1] != "\n":
                        w.add(text[i + 1], True)
                    i += 2
                elif c == "`" or (c == "$" and i + 1 < n and text[i + 1] in "({"):
                    j = _substitution(text, i)
                    for s in text[i:j]:
                        w.add(s, False)
                    i = j
                else:
                    w.add(c, c != "$")
                    i += 1
            i += 1
        elif ch == "`" or (ch == "$" and i + 1 < n and text[i + 1] in "({"):
            j = _substitution(text, i)
            w = current()
            for s in text[i:j]:
                w.add(s, False)
            i = j
        else:
            current().add(ch, ch not in _ACTIVE)
            i += 1
    end()
    return out


def scripts(text: str) -> list[str]:
    """``text`` and the inline scripts it hands to a shell (the word after ``sh -c``/``bash -c``), recursively."""
    found = [text]
    ws = words(text)
    for k, w in enumerate(ws[:-1]):
        if w.text == "-c" and k > 0 and ws[k - 1].text.rsplit("/", 1)[-1] in ("sh", "bash", "dash"):
            found += scripts(ws[k + 1].text)
    return found
