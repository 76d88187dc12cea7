"""What only serving needs: settings, API schemas, model loading, the HTTP edge, batching, the event log."""
