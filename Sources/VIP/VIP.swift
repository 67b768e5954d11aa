// VIP
