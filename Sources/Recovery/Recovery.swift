// Recovery
