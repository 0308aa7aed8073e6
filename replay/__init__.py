"""Open-loop replay: scheduler, request builders, transport, results, metrics, thresholds, reports."""
