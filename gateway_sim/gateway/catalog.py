"""Illustrative goods and parties the simulated gateway draws from. Data, not rules: each good sits
under a TPL whose HTSUS chapters and units (in the packaged reference data) cover it."""
from __future__ import annotations

# tpl_number -> (HTSUS number, description, unit, smallest and largest quantity)
GOODS: dict[str, list[tuple[str, str, str, int, int]]] = {
    "9823.53.01": [
        ("6109.10.0012", "Men's knit cotton T-shirts", "DOZ", 50, 4000),
        ("6105.10.0010", "Men's knit cotton polo shirts", "DOZ", 50, 3000),
        ("6110.20.2079", "Cotton knit pullovers", "DOZ", 40, 2500),
        ("6203.42.4511", "Men's cotton denim trousers", "DOZ", 30, 3000),
        ("6204.62.8011", "Women's cotton denim trousers", "DOZ", 30, 3000),
        ("6205.20.2016", "Men's woven cotton shirts", "DOZ", 40, 2000),
        ("6206.30.3011", "Women's woven cotton blouses", "DOZ", 40, 2000),
    ],
    "9823.53.02": [
        ("6203.31.0010", "Men's wool suit-type jackets", "NO", 100, 5000),
        ("6110.11.0030", "Wool knit sweaters", "DOZ", 20, 800),
        ("6204.61.9010", "Women's wool trousers", "DOZ", 20, 600),
    ],
    "9823.53.04": [
        ("5208.52.3035", "Printed plain-weave cotton fabric", "M2", 2000, 150000),
        ("5407.61.9930", "Woven polyester filament fabric", "M2", 2000, 120000),
        ("6302.31.9020", "Woven cotton bed sheets", "NO", 500, 20000),
    ],
    "9823.53.05": [
        ("6006.22.9080", "Dyed cotton knit fabric", "KG", 500, 30000),
        ("6004.10.0025", "Elastomeric knit fabric", "KG", 300, 15000),
    ],
    "9823.53.06": [
        ("5205.12.1000", "Single uncombed cotton yarn", "KG", 1000, 40000),
        ("5509.53.0030", "Polyester-cotton blended yarn", "KG", 1000, 30000),
    ],
}
# How often each TPL is certified: apparel dominates, as in the real fill rates.
TPL_WEIGHTS = {"9823.53.01": 50, "9823.53.02": 5, "9823.53.04": 15, "9823.53.05": 20, "9823.53.06": 10}

IMPORTERS = ("12-345678900", "98-765432100", "45-123456700", "33-445566700", "27-908172600", "61-200300400")

EXPORTERS = (
    ("Textiles del Norte SA de CV", "Av. Juárez 100, Monterrey, NL", "TNO010101AAA"),
    ("Hilados de Puebla SA de CV", "Blvd. Atlixco 45, Puebla, Pue.", "HPU990303BB1"),
    ("Mezclilla de La Laguna SA de CV", "Calz. Colón 870, Torreón, Coah.", "MLA050505CC2"),
    ("Tejidos Tlaxcala SA de CV", "Carretera Federal 12 km 3, Apizaco, Tlax.", "TTL071010DD3"),
)
PRODUCERS = (
    ("Confecciones Bajío SA de CV", "Calle 5 de Mayo 22, León, Gto.", "CBA020202BBB"),
    ("Maquiladora Yucateca SA de CV", "Periférico Norte 300, Mérida, Yuc.", "MYU111111EE4"),
    ("Industrias Textiles de Jalisco SA de CV", "Av. Vallarta 5000, Zapopan, Jal.", "ITJ080808FF5"),
    ("Hilandería Aguascalientes SA de CV", "Av. Convención 1914 Nte. 12, Aguascalientes, Ags.", "HAG060606GG6"),
)
