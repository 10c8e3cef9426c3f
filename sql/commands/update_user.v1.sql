-- command: update_user
-- version: 1
-- key: email
-- description: Rename the user with this email.
UPDATE users SET name = :name, updated_at = now() WHERE email = :email;
