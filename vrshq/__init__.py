"""vrshq: text-prompted video object tracks for Label Studio, with VRS-HQ and SAM-2."""

__version__ = "0.1.0"
