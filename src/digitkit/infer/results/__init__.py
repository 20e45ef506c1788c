"""Result rows and the files that hold them: `formats` (the one result-format table),
`rows` (rows, their CSV / JSON Lines text, the reversible escape of odd file names),
`columns` (the one Parquet schema), `textfile` (the CSV / JSON Lines result file: whole rows
only, resume with a compact done-set) and `parquet` (the streamed Parquet result file)."""
