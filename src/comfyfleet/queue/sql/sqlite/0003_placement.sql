-- Model-aware placement (fleet/placement.py): the model files a task needs, as a JSON array
-- of "folder/file" names (NULL: any claimer may take it), and its warm key, the checkpoint it
-- loads (a claimer that ran that one last prefers the task). NULL on rows from before.
ALTER TABLE tasks ADD COLUMN models TEXT;
ALTER TABLE tasks ADD COLUMN checkpoint TEXT;
