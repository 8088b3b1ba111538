"""Text conditioning: T5 tokenizer and encoder, projection to the U-Net context, null embedding."""

from fusionframes.text.conditioning import TextConditioner, TextProjection, project_text

__all__ = ["TextConditioner", "TextProjection", "project_text"]
