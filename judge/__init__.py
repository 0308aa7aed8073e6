"""The judge: result rows, metrics, thresholds, checks, faithfulness, summaries and reports.

Both the replay (measured rows) and the prediction (predicted rows) write result rows and judge
them here, so a verdict is computed by one set of rules."""
