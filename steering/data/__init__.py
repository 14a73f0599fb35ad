"""The shipped data (default dimensions, neutral prompts, the held-out split) as JSON files;
`catalog` reads them."""
