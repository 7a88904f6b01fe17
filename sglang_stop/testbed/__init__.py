"""A tiny from-scratch arithmetic-chain model whose early mistakes are visible in the prefix.

It is the CPU testbed for STOP: a wrong step like ``5+3=9;`` dooms a chain, so a learned scorer that
reads the prefix can beat confidence, while the whole model trains in minutes.
"""
