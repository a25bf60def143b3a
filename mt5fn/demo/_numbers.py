"""Cardinal numbers 0-999 written out in English, German, French and Spanish.

The demo's task is reading these back into digits ("fr: quatre-vingt-dix-sept"
-> "97"): every answer is checkable, and the languages build numbers in
different orders (German puts units before tens, "siebenundneunzig"; French
counts in twenties from 60, "quatre-vingt-dix-sept" = 4*20+10+7), so the
model has to learn four small grammars, not one lookup.

Spelling: English without "and" ("three hundred forty-two"); German as one
word ("dreihundertzweiundvierzig"); French with the traditional hyphens
below 100 and the plural "s" of "cents" / "quatre-vingts" only at the end;
Spanish with its fused 16-29 ("dieciséis", "veintitrés").
"""

from __future__ import annotations

from ..checks import check_int

LANGUAGES = ("en", "de", "fr", "es")
MAX_NUMBER = 999

_EN_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
             "sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def english(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_EN_SMALL[hundreds]} hundred"] if hundreds else []
    if rest or not hundreds:
        if rest < 20:
            words.append(_EN_SMALL[rest])
        else:
            tens, unit = divmod(rest, 10)
            words.append(_EN_TENS[tens] + (f"-{_EN_SMALL[unit]}" if unit else ""))
    return " ".join(words)


_DE_SMALL = ("null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
             "sechzehn siebzehn achtzehn neunzehn").split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()


def german(n: int) -> str:
    if n == 0:
        return "null"
    hundreds, rest = divmod(n, 100)
    word = ("ein" if hundreds == 1 else _DE_SMALL[hundreds]) + "hundert" if hundreds else ""
    if rest < 20:
        word += _DE_SMALL[rest] if rest else ""
    else:
        tens, unit = divmod(rest, 10)
        unit_word = "ein" if unit == 1 else _DE_SMALL[unit]
        word += (f"{unit_word}und" if unit else "") + _DE_TENS[tens]
    return word


_FR_SMALL = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
             "dix-sept dix-huit dix-neuf").split()
_FR_TENS = "_ _ vingt trente quarante cinquante soixante".split()


def _french_below_100(n: int) -> str:
    if n < 20:
        return _FR_SMALL[n]
    tens, unit = divmod(n, 10)
    if tens in (7, 9):  # soixante-dix, quatre-vingt-dix: count on from 60 / 80 with 10..19
        base = "soixante" if tens == 7 else "quatre-vingt"
        rest = n - (60 if tens == 7 else 80)
        joiner = " et " if rest == 11 and tens == 7 else "-"
        return base + joiner + _FR_SMALL[rest]
    if tens == 8:
        return "quatre-vingts" if unit == 0 else f"quatre-vingt-{_FR_SMALL[unit]}"
    if unit == 0:
        return _FR_TENS[tens]
    if unit == 1:
        return f"{_FR_TENS[tens]} et un"
    return f"{_FR_TENS[tens]}-{_FR_SMALL[unit]}"


def french(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _french_below_100(n)
    head = "cent" if hundreds == 1 else f"{_FR_SMALL[hundreds]} cent" + ("s" if rest == 0 else "")
    return head if rest == 0 else f"{head} {_french_below_100(rest)}"


_ES_SMALL = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciséis "
             "diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro veinticinco "
             "veintiséis veintisiete veintiocho veintinueve").split()
_ES_TENS = "_ _ veinte treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_ES_HUNDREDS = ("_ ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos ochocientos "
                "novecientos").split()


def spanish(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if n == 100:
        return "cien"
    words = [_ES_HUNDREDS[hundreds]] if hundreds else []
    if rest or not hundreds:
        if rest < 30:
            words.append(_ES_SMALL[rest])
        else:
            tens, unit = divmod(rest, 10)
            words.append(_ES_TENS[tens] + (f" y {_ES_SMALL[unit]}" if unit else ""))
    return " ".join(words)


SPELL = {"en": english, "de": german, "fr": french, "es": spanish}


def spell(n: int, language: str) -> str:
    """``n`` (0..999) in words in ``language`` (one of ``LANGUAGES``)."""
    if language not in SPELL:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    check_int("n", n, 0, MAX_NUMBER)
    return SPELL[language](n)
