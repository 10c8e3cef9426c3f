-- command: delete_user
-- version: 1
-- key: email
-- description: Delete the user with this email.
DELETE FROM users WHERE email = :email;
