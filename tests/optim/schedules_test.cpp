// Placeholder: written next.
