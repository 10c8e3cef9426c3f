-- create_user version 2 records how a user wants to be addressed.
ALTER TABLE users ADD COLUMN display_name text;
