-- Issue 13: which client surface a request came through (chat_completions | messages).
-- Rows logged before it were all chat completions.
ALTER TABLE usage_log ADD COLUMN surface text NOT NULL DEFAULT 'chat_completions';
