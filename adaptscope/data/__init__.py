"""Real image data: folders and zips of images, validated, and few-shot subsets drawn from them."""
