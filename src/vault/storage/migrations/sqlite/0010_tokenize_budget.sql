-- A per-caller tokenize budget (issue 13): a token bucket counted in items.
ALTER TABLE callers ADD COLUMN tokenize_rate REAL;       -- items per second refilled; NULL = the server's tokenize_rate; 0 = no budget
ALTER TABLE callers ADD COLUMN tokenize_burst INTEGER;   -- bucket size in items; NULL = the server's tokenize_burst
