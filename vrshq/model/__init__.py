"""Model code: the MLLM (Chat-UniVi, `vrshq.model.chatunivi`) and the other VRS-HQ parts.

Kept minimal on purpose: import the sub-packages you need directly.
"""
