"""Her voice and her world's limits in role-play.

- ``persona.scenes``: her classic scenes from the book (the line said to her, her reply, a little
  narration), chosen once per character for the prompt's cached head, and per turn the lines of hers
  closest to the question (ChatHaruhi's "classic scenes").
- ``persona.guard``: the rules an answer must pass before it is shown (no echo of the question, no
  loop, no word of the modern world, no code, no assistant talk), applied sentence by sentence while
  the answer streams, so a tripped answer is regenerated once or ended before the fault.
- ``persona.strange``: questions from outside her world (高铁, Netflix, be an assistant), told by her
  book's own vocabulary and by meaning: she is reminded of her world's limits, and her answer may not
  take up the question's strange words, nor figures when her book writes none.
"""
