"""The admission webhook: FastAPI app, AdmissionReview models, validate and mutate."""
