"""What only serving needs: settings, API schemas, model loading, HTTP guards."""
