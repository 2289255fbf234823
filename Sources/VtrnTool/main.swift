print("vtrn")
