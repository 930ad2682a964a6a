"""The symbol table shared by every model: 256 byte values plus a few specials.

Data streams hold values in [0, NUM_DATA_SYMBOLS): the 256 bytes and BOUNDARY,
which separates documents when they are packed into fixed-length sequences.
The other specials never appear in data: MASK is the absorbing state of masked
diffusion, END_OF_PATCH closes a patch in the local decoder, PAD fills unused
positions of static-shape arrays.
"""

NUM_BYTES = 256
BOUNDARY = 256  # document separator inside packed sequences (MDLM's OWT "wrap")
NUM_DATA_SYMBOLS = 257  # what a model may predict: bytes + BOUNDARY
MASK = 257
END_OF_PATCH = 258
PAD = 259
VOCAB_SIZE = 260  # embedding table size
