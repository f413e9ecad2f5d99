"""Solution to the exercise of notebooks/11_tokens_and_real_models.ipynb: one BPE merge."""


def my_merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Return a new list with every occurrence of pair side by side joined, left to right."""
    first, second = pair
    # 1. A new list for the result: the caller's symbols stay as they are.
    merged = []
    # 2. Walk from the left with an index of our own: a while loop can move it by two.
    i = 0
    while i < len(symbols):
        # 3. The pair starts here if there is a next symbol and the two are first, then second
        #    (each compared whole with its own part, in this order).
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            # 4. Add them joined and move past both: a symbol goes into one merge at most, so in
            #    "a a a" the first two join and the third stays.
            merged.append(first + second)
            i += 2
        else:
            # 5. Otherwise keep this symbol as it is and look at the next one.
            merged.append(symbols[i])
            i += 1
    return merged
