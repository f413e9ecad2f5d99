"""What the lessons measure, one module per topic, on three shared helpers: `statistics`
(standard errors), `batches` (stories drawn in seeded batches) and `recorded` (recorded logits)."""
