"""Rule-based rewards: answer extraction, format, math equivalence, language consistency."""
