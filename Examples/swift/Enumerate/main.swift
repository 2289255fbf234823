import Vtrn
